fn main() {
    model_embed::embed_model();
}
