"""One module per `llcuda` subcommand group: each has ``add_parser(subparsers)``.

``add_parser`` registers its sub-parsers and sets ``func`` (``Callable[[Namespace, Settings],
int]``) on each, which returns the exit code. Commands raise ``LlcudaError`` for anything the
user should read; ``cli.main`` prints it as one line.
"""
