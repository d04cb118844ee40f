"""The commands beside `process`, each in its own module: `info.py` (what an image is,
from its manifest and config), `check.py` (is it sound), `search.py` (which layers hold
which paths); `images.py` is what they share (opening a source as the pipeline does,
picking the images of an index, a layer's bytes in a file)."""
