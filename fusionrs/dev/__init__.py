"""Developer tools shipped with the library: the sample-source generator, tiny debug models in
their real on-disk formats, and a local OpenAI-compatible server with fault injection."""
