"""The SCons tool modules (generate/exists); see wasmml.TOOLPATH."""
