"""Drawing boxes and captions on images (TensorBoard summaries, `ssl-keras predict`)."""

import numpy as np
from PIL import Image, ImageDraw

TRUE_COLOR = (40, 220, 60)
PRED_COLOR = (255, 60, 40)


def draw_boxes(image, boxes, *, captions=None, colors=None, width=2):
    """Draws normalised (ymin, xmin, ymax, xmax) boxes on an image.

    Args:
        image: array [H, W, 3] in [0, 255] (any numeric dtype).
        boxes: array [K, 4] of normalised rel_yxyx boxes.
        captions: optional list of K strings drawn at each box's top-left corner.
        colors: optional list of K RGB tuples. Defaults to the prediction colour.
        width: int, line width in pixels. Defaults to 2.

    Returns:
        uint8 array [H, W, 3].
    """
    canvas = Image.fromarray(np.clip(np.asarray(image, dtype="float32"), 0, 255).astype("uint8"))
    draw = ImageDraw.Draw(canvas)
    height, width_px = canvas.height, canvas.width
    for i, box in enumerate(np.asarray(boxes, dtype="float32").reshape(-1, 4)):
        ymin, xmin, ymax, xmax = box
        color = colors[i] if colors else PRED_COLOR
        corners = [
            xmin * width_px,
            ymin * height,
            max(xmax * width_px - 1, xmin * width_px),
            max(ymax * height - 1, ymin * height),
        ]
        draw.rectangle(corners, outline=color, width=width)
        if captions and captions[i]:
            x, y = corners[0] + 2, max(corners[1] - 12, 0)
            text_box = draw.textbbox((x, y), captions[i])
            draw.rectangle(text_box, fill=color)
            draw.text((x, y), captions[i], fill=(0, 0, 0))
    return np.asarray(canvas)
