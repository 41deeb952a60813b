"""Settings shared by the trainer tests (a plain module: ``conftest`` names collide)."""


def tiny_train_settings(root, out=None, **changes) -> dict:
    """Config values for a seconds-long CPU training run of the tiny model on ``root``."""
    settings = {
        "data_root": str(root),
        "model": "tiny_random",
        "image_size": 48,
        "labelled_percent": 30,
        "batch_size": 2,
        "unlabelled_batch_size": 2,
        "workers": 0,
        "eval_batch_size": 2,
        "eval_max_batches": 1,
        "progress": False,
        "tensorboard": False,
        "lr": 1e-3,
    }
    if out is not None:
        settings["out_dir"] = str(out)
    settings.update(changes)
    return settings
