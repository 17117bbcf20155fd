"""Click commands of ssl-keras (installed as the package ssl_keras.cli)."""
