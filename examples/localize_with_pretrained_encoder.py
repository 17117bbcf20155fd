"""Transfer a pretrained encoder to VOC localization with `BoxRegressor` and `model.fit`.

A frozen encoder under the spatial head, trained on a quarter of the labels, scored next to
the constant prior box and the majority class fitted on the same labels.

Run: python examples/localize_with_pretrained_encoder.py ENCODER.keras voc:../shared/data/voc2007
"""

import sys

import keras

from ssl_keras.localization.box_baselines import fit_baselines, margins, score_baselines
from ssl_keras.localization.box_metrics import localization_report
from ssl_keras.localization.box_regressor import BoxRegressor
from ssl_keras.data.localization import load_localization_data
from ssl_keras.localization.detect import predict_dataset

encoder_path, data_spec = sys.argv[1], sys.argv[2]
data = load_localization_data(data_spec, image_size=128, batch_size=16, label_fraction=0.25)
encoder = keras.saving.load_model(encoder_path)
encoder.trainable = False  # frozen backbone, BatchNorm in inference mode
model = BoxRegressor(encoder, num_classes=len(data.class_names), head="spatial", augmenter=None)
model.compile(optimizer=keras.optimizers.AdamW(1e-3), jit_compile=False)
model.fit(data.train, validation_data=data.val, epochs=10)
arrays = predict_dataset(model, data.test)
report = localization_report(
    arrays["true_boxes"],
    arrays["pred_boxes"],
    arrays["labels"],
    arrays["class_probs"],
    data.class_names,
)
names = list(data.class_names)
fitted = fit_baselines(data.targets["train"]["boxes"], data.targets["train"]["labels"], names)
baselines = score_baselines(
    fitted, data.targets["test"]["boxes"], data.targets["test"]["labels"], names
)
print({key: round(report[key], 3) for key in ("mean_iou", "loc_acc@0.5", "top1", "balanced_top1")})
print(
    "prior box:",
    {key: round(value, 3) for key, value in baselines["prior_box"].items() if key != "box"},
)
print("margins:", {key: round(value, 3) for key, value in margins(report, baselines).items()})
