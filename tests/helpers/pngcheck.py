"""What a chart PNG says about itself (read with Pillow, which matplotlib depends on): a real PNG,
its size, its tEXt metadata (tools/lab/charts.py writes Title and Description), its colours."""
from PIL import Image


def read_png(path):
    """-> {"width", "height", "text": {keyword: value}, "colours": distinct RGB colours}."""
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    with Image.open(path) as im:
        im.verify()  # chunk CRCs and structure
    with Image.open(path) as im:
        assert im.format == "PNG"
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        return {"width": im.width, "height": im.height, "text": dict(getattr(im, "text", {})),
                "colours": len(colours)}
