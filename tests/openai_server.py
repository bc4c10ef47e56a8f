"""A real OpenAI-compatible model server for the tests: llama-cpp-python's own (its ``server`` extra).

    python tests/openai_server.py MODEL.gguf PORT [N_CTX]

It serves one GGUF on 127.0.0.1:PORT with one thread. The model is loaded with the CPU weight placement
kg-etl's probe chose for it (``kg_etl.llm.placement``): llama.cpp's repacked AMX kernels segfault on Intel
Xeons, and the server itself has no option to turn them off. Otherwise it is the server as users run it.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(model: str, port: int, n_ctx: int = 8192) -> None:
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from kg_etl.llm.placement import resolve_placement
    from kg_etl.llm.runtime import _extra_buffer_types

    placement = resolve_placement(Path(model), "auto", n_gpu_layers=0, threads=1)
    with _extra_buffer_types(placement.extra_bufts):  # the model loads when the app is made
        app = create_app(
            server_settings=ServerSettings(host="127.0.0.1", port=port),
            model_settings=[ModelSettings(model=model, n_ctx=n_ctx, n_threads=1, n_threads_batch=1, verbose=False)],
        )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *(int(a) for a in sys.argv[3:4]))
