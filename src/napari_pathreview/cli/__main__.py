"""``python -m napari_pathreview.cli``: the ``pathreview`` command."""

import sys

from . import main

sys.exit(main())
