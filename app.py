"""revelio's Gradio app: ``python app.py`` serves the bundled Fashion-MNIST release (also the Space entry point)."""

from __future__ import annotations

import argparse

from revelio.app import create_demo
from revelio.app.uploads import MAX_UPLOAD_BYTES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--release", default="bundled", help='"bundled", a release folder, or a Hub repo id')
    parser.add_argument("--host", help="default 127.0.0.1 (GRADIO_SERVER_NAME overrides; a Space sets 0.0.0.0)")
    parser.add_argument("--port", type=int, help="default 7860 (GRADIO_SERVER_PORT overrides)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    demo = create_demo(args.release, args.device)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD_BYTES)


if __name__ == "__main__":
    main()
