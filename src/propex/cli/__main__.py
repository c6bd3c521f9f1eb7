"""``python -m propex.cli``: the same as the ``propex`` command."""
import sys

from . import main

sys.exit(main())
