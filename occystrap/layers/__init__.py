"""One home for layer bytes: streaming (de)compression with inline hashing (`codec.py`),
reading a layer's tar stream member by member (`tarread.py`), writing tar archives with
sendfile (`tarwrite.py`), expanding layers into a root filesystem (`expand.py`), the new
manifests and configs of re-encoded or filtered images (`rewrite.py`) and the
`--layer-cache` of re-encodings (`cache.py`).

`codec.py` is not called `io.py` (DESIGN §3's name): a module named like the standard
library's would be imported under another name wherever the standard `io` is used too.
"""
