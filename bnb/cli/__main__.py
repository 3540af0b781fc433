"""``python -m bnb.cli``: the ``bnb`` command line."""
from bnb.cli.main import main

main()
