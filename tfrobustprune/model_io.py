"""Loading model files with errors that name the file: `.keras` archives and `.tflite` flatbuffers."""

import json
import os
import zipfile

import keras
import numpy as np

# A TFLite flatbuffer carries this identifier at bytes 4..8.
TFLITE_IDENTIFIER = b"TFL3"


class ModelFileError(ValueError):
    """A model file is missing, truncated, corrupted or of the wrong kind; the message names it."""


def load_keras_model(path):
    """Loads a `.keras` model (gated or stripped), with a clear error for a bad file.

    Args:
        path: Path of a `.keras` file.

    Returns:
        The `keras.Model`.

    Raises:
        ModelFileError: naming `path` and what is wrong with it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    if not path.endswith(".keras"):
        raise ModelFileError(f"{path}: expected a .keras file (Keras 3 format)")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a valid .keras archive (truncated or corrupted?)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise ModelFileError(f"{path}: corrupted entry {bad!r} in the .keras archive")
        return keras.models.load_model(path, compile=False)
    except ModelFileError:
        raise
    except Exception as error:  # Keras raises many types for a bad archive; one message names the file.
        raise ModelFileError(
            f"{path}: could not be loaded as a Keras model ({type(error).__name__}: {error})"
        ) from error


def read_tflite(path):
    """Reads a `.tflite` file and checks that it is a TFLite flatbuffer.

    Args:
        path: Path of a `.tflite` file.

    Returns:
        The file's bytes.

    Raises:
        ModelFileError: naming `path` if it is missing, truncated or not TFLite.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    with open(path, "rb") as f:
        content = f.read()
    if len(content) < 16 or content[4:8] != TFLITE_IDENTIFIER:
        raise ModelFileError(f"{path}: not a TFLite flatbuffer (missing 'TFL3' identifier; truncated or corrupted?)")
    try:
        from ai_edge_litert.interpreter import Interpreter

        Interpreter(model_content=content)
    except Exception as error:
        raise ModelFileError(f"{path}: the LiteRT interpreter cannot read it ({error})") from error
    return content


def save_layer_weights(model, path):
    """Writes every layer's weights to an `.npz` keyed `layer_name/index`.

    The exchange format with other Keras versions (e.g. the tf_keras process of
    the TFMOT baseline): layer names, not variable paths, identify the weights.

    Args:
        model: A `keras.Model`.
        path: Str, the `.npz` file to write.
    """
    arrays = {f"{layer.name}/{i}": w for layer in model.layers for i, w in enumerate(layer.get_weights())}
    write_npz_atomic(path, **arrays)


def load_layer_weights(model, path):
    """Sets the layers named in an `.npz` written by `save_layer_weights` (or its tf_keras twin).

    Args:
        model: A `keras.Model` with a layer of every name in the file.
        path: Str, the `.npz` file.

    Raises:
        ModelFileError: for a missing file, or a layer name the model lacks.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such weights file")
    per_layer = {}
    with np.load(path) as arrays:
        for key in arrays.files:
            layer, index = key.rsplit("/", 1)
            per_layer.setdefault(layer, {})[int(index)] = arrays[key]
    names = {layer.name for layer in model.layers}
    missing = sorted(set(per_layer) - names)
    if missing:
        raise ModelFileError(f"{path}: layers {missing[:5]} are not in model {model.name!r}")
    for name, weights in per_layer.items():
        model.get_layer(name).set_weights([weights[i] for i in sorted(weights)])


def write_json_atomic(path, value, indent=None):
    """Writes `value` as JSON to `path` through a temporary file, so a crash never leaves half a file.

    Args:
        path: Str, the JSON file; its directory is created if missing.
        value: A JSON-serialisable object.
        indent: Int or None, passed to `json.dumps`.
    """
    text = json.dumps(value, indent=indent)  # serialise first: a bad value leaves no temporary behind
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path, data):
    """Writes `data` to `path` through a temporary file, so a crash never leaves half a file.

    Args:
        path: Str or path-like; its directory is created if missing.
        data: Bytes, e.g. a TFLite flatbuffer.

    Example:
        >>> write_bytes_atomic("runs/model_int8.tflite", converted["int8"])
    """
    path = os.fspath(path)
    extension = os.path.splitext(path)[1]

    def write(temporary):
        with open(temporary, "wb") as f:
            f.write(data)

    _write_through_temporary(path, extension, write)


def save_keras_atomic(model, path):
    """`model.save(path)` through a temporary file, so a run stopped mid-save never leaves a corrupt `.keras`
    that a resumed run would take as finished.

    Args:
        model: A `keras.Model`.
        path: Str or path-like ending in ".keras"; its directory is created if missing.

    Raises:
        ValueError: if `path` does not end in ".keras".
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"`path` must end in '.keras'. Received: path={path!r}")
    _write_through_temporary(path, ".keras", model.save)


def write_npz_atomic(path, *arrays, **named_arrays):
    """`np.savez(path, *arrays, **named_arrays)` through a temporary file, so a crash never leaves half a file.

    Like `np.savez`, appends ".npz" to a `path` that does not end in it. A failed
    write leaves the previous file, if any, untouched and no temporary behind.

    Args:
        path: Str or path-like, the `.npz` file; its directory is created if missing.
        *arrays: Arrays stored as `arr_0`, `arr_1`, ...
        **named_arrays: Arrays stored under their keyword.

    Returns:
        Str, the path written.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    _write_through_temporary(path, ".npz", lambda temporary: np.savez(temporary, *arrays, **named_arrays))
    return path


def _write_through_temporary(path, extension, write):
    """Calls `write(temporary)` (a name ending in `extension`, which Keras and NumPy require), then moves it
    onto `path`; creates the directory, and removes the temporary if `write` fails."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    temporary = path[: len(path) - len(extension)] + ".tmp" + extension
    try:
        write(temporary)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    os.replace(temporary, path)
