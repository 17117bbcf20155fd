"""Transfer a SimCLR encoder to VOC localization with `BoxRegressor` and `model.fit`.

Run: python examples/localize_with_pretrained_encoder.py ENCODER.keras voc:../shared/data/voc2007
"""

import sys

import keras

from ssl_keras.box_metrics import localization_report
from ssl_keras.box_regressor import BoxRegressor
from ssl_keras.data.localization import load_localization_data
from ssl_keras.detect import predict_dataset

encoder_path, data_spec = sys.argv[1], sys.argv[2]
data = load_localization_data(data_spec, image_size=128, batch_size=16, label_fraction=0.25)
encoder = keras.saving.load_model(encoder_path)
encoder.trainable = False  # linear-probe style: frozen backbone, BatchNorm in inference mode
model = BoxRegressor(encoder, num_classes=len(data.class_names), augmenter=None)
model.compile(optimizer=keras.optimizers.AdamW(1e-3), jit_compile=False)
model.fit(data.train, validation_data=data.val, epochs=3)
arrays = predict_dataset(model, data.test)
print(localization_report(arrays["true_boxes"], arrays["pred_boxes"], arrays["labels"], arrays["class_probs"],
                          data.class_names))
