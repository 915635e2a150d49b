// Links the compiled model that the cargo_wasm SCons tool names, and embeds
// its plan, weights, metadata and labels (model-embed).
fn main() {
    model_embed::embed_model();
}
