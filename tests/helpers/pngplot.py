"""A tiny pure-Python PNG chart (zlib only): a step curve of y over x, axes with numeric ticks,
a dashed vertical marker. Enough for `tools/fleet.py` without matplotlib."""
import struct
import zlib

# 3x5 glyphs, rows top to bottom, 3 bits each
_FONT = {
    "0": (7, 5, 5, 5, 7), "1": (2, 6, 2, 2, 7), "2": (7, 1, 7, 4, 7), "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1), "5": (7, 4, 7, 1, 7), "6": (7, 4, 7, 5, 7), "7": (7, 1, 1, 2, 2),
    "8": (7, 5, 7, 5, 7), "9": (7, 5, 7, 1, 7), "s": (0, 7, 4, 1, 7), " ": (0, 0, 0, 0, 0),
    ".": (0, 0, 0, 0, 2), "%": (5, 1, 2, 4, 5),
}


class Canvas:
    def __init__(self, w, h, bg=(255, 255, 255)):
        self.w, self.h = w, h
        self.px = [bytearray(bytes(bg) * w) for _ in range(h)]

    def set(self, x, y, c):
        if 0 <= x < self.w and 0 <= y < self.h:
            self.px[y][3 * x:3 * x + 3] = bytes(c)

    def hline(self, x0, x1, y, c, dash=0):
        for x in range(min(x0, x1), max(x0, x1) + 1):
            if not dash or (x // dash) % 2 == 0:
                self.set(x, y, c)

    def vline(self, x, y0, y1, c, dash=0):
        for y in range(min(y0, y1), max(y0, y1) + 1):
            if not dash or (y // dash) % 2 == 0:
                self.set(x, y, c)

    def text(self, x, y, s, c=(0, 0, 0), scale=2):
        for ch in s:
            rows = _FONT.get(ch, _FONT[" "])
            for r, bits in enumerate(rows):
                for b in range(3):
                    if bits & (4 >> b):
                        for dy in range(scale):
                            for dx in range(scale):
                                self.set(x + b * scale + dx, y + r * scale + dy, c)
            x += 4 * scale

    def png(self):
        raw = b"".join(b"\x00" + bytes(row) for row in self.px)

        def chunk(tag, data):
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _ticks(vmax, n=5):
    if vmax <= 0:
        return [0]
    raw = vmax / n
    mag = 10 ** (len(str(int(raw))) - 1) if raw >= 1 else 1
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return list(range(0, int(vmax) + 1, int(step)))


def step_chart(path, points, xmax, ymax, marker=None, title=None, w=800, h=450):
    """points: [(x, y)] sorted by x; a step curve from (0, 0). marker: x of a dashed vertical line.
    The title is not drawn (3x5 digits only); it is kept in a tEXt-free PNG for simplicity."""
    del title
    cv = Canvas(w, h)
    left, right, top, bottom = 70, w - 20, 20, h - 50
    xmax = max(xmax, 1e-9)
    ymax = max(ymax, 1)

    def X(x):
        return left + int((right - left) * x / xmax)

    def Y(y):
        return bottom - int((bottom - top) * y / ymax)
    grey, black, blue, red = (225, 225, 225), (0, 0, 0), (30, 90, 200), (200, 40, 40)
    for t in _ticks(xmax):
        cv.vline(X(t), top, bottom, grey)
        lab = f"{t}s"
        cv.text(X(t) - len(lab) * 4, bottom + 10, lab)
    for t in _ticks(ymax):
        cv.hline(left, right, Y(t), grey)
        lab = str(t)
        cv.text(left - 10 - len(lab) * 8, Y(t) - 5, lab)
    cv.hline(left, right, bottom, black)
    cv.vline(left, top, bottom, black)
    if marker is not None:
        for dx in (0, 1):
            cv.vline(X(marker) + dx, top, bottom, red, dash=6)
    px, py = 0.0, 0
    for x, y in list(points) + [(xmax, points[-1][1] if points else 0)]:
        for dy in (0, 1):
            cv.hline(X(px), X(x), Y(py) - dy, blue)
        for dx in (0, 1):
            cv.vline(X(x) + dx, Y(py), Y(y), blue)
        px, py = x, y
    with open(path, "wb") as f:
        f.write(cv.png())
    return path
