"""``python -m pcapflow``: the ``pcapflow`` command (signal handlers first, see ``_entry``)."""

from pcapflow._entry import main

main()
