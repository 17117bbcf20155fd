from setuptools import find_packages, setup

setup(
    name="ssl_keras",
    version="0.1.0",
    description="SimCLR pretraining on unlabeled images and transfer to Pascal VOC localization, in Keras 3.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Every stage folder under ssl_keras/ (runs, pretraining, localization, ...) is a package.
    packages=find_packages(include=["ssl_keras", "ssl_keras.*"]) + ["ssl_keras.cli"],
    # The click layer lives in the top-level cli/ folder but is imported as ssl_keras.cli,
    # so it can never clash with another distribution's top-level `cli` package.
    package_dir={"ssl_keras.cli": "cli"},
    # Each requirement is imported by ssl_keras/ or cli/ (tests/test_dependencies.py checks it).
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.15",
        "numpy>=1.26",
        "tensorflow-datasets>=4.9",
        # tensorflow-datasets imports it but does not declare it.
        "importlib_resources>=5.0",
        "tensorboard>=2.16",
        "click>=8.1",
        "pillow>=10.0",
        "matplotlib>=3.7",
        "pyyaml>=6.0",
    ],
    extras_require={
        "dev": ["pytest>=7.4", "ruff>=0.6"],
        # Optional Keras backends (KERAS_BACKEND=jax or torch).
        "jax": ["jax>=0.4"],
        "torch": ["torch>=2.2"],
        # Only a test uses it: tests/localization/test_box_losses.py checks the GIoU loss
        # against keras-cv's. Not a default: the package never imports it, and it pulls in
        # the obsolete keras-core 0.1.7.
        "keras-cv": ["keras-cv>=0.9"],
        # --export-onnx converts with tf2onnx (which brings onnx); onnxruntime runs the files,
        # and tests/runs/test_export_onnx.py checks them with it.
        "onnx": ["tf2onnx>=1.17", "onnxruntime>=1.17"],
    },
    entry_points={"console_scripts": ["ssl-keras=ssl_keras.cli.main:main"]},
)
