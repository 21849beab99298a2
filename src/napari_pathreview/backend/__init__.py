"""Backend: torch / numpy / zarr only. Never imports Qt, napari or magicgui."""
