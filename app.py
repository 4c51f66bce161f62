"""revelio's Gradio app: ``python app.py`` serves the bundled Fashion-MNIST release (also the Space entry point).

``python app.py --release bundled-text`` serves the bundled text-to-image release instead. A Space
serves another release without code changes: set its variable REVELIO_RELEASE ("bundled-text", or a
Hub release repo id; and REVELIO_DEVICE=cuda on GPU hardware); --release and --device win over them.
"""

from __future__ import annotations

import argparse
import os

from revelio.app import create_demo
from revelio.app.uploads import MAX_UPLOAD_BYTES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", default=os.environ.get("REVELIO_RELEASE") or "bundled",
                        help='"bundled", "bundled-text", a release folder, or a Hub repo id (default: $REVELIO_RELEASE, else "bundled")')
    parser.add_argument("--host", help="default 127.0.0.1 (GRADIO_SERVER_NAME overrides; a Space sets 0.0.0.0)")
    parser.add_argument("--port", type=int, help="default 7860 (GRADIO_SERVER_PORT overrides)")
    parser.add_argument("--device", default=os.environ.get("REVELIO_DEVICE") or "cpu",
                        help="cpu or cuda (default: $REVELIO_DEVICE, else cpu)")
    args = parser.parse_args(argv)
    demo = create_demo(args.release, args.device)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD_BYTES)


if __name__ == "__main__":
    main()
