"""``python -m mutator_governance``: the ``mutator`` command line (see ``_cli``)."""

from ._cli import main

raise SystemExit(main())
