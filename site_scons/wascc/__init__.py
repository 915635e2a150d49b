"""waSCC actors beside the build, in a package of its own that depends on
no part of the SCons plugin (`wasmml`).

    wascc.leb128        the LEB128 integers of the WebAssembly binary format

Importing it imports nothing.
"""
