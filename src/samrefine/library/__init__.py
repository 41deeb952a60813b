"""The offline proposal library: on-disk store, builders, generators, importers.

``ProposalLibrary.open(path)[image_id]`` reads one image's proposals; ``ProposalLibrary.create``
writes a library (crash-safe, resumable, shardable); ``build_library`` runs a registered
generator (``"sam"``, ``"sam2"``, ``"classical"``) over a folder of images. The format is
specified in :mod:`samrefine.library.format` and ``docs/library-format.md``.
"""

from .coco_io import export_coco, import_coco
from .format import (
    FORMAT_VERSION,
    DuplicateImageError,
    LibraryCorruptError,
    LibraryError,
    LibraryFinishedError,
)
from .generate import (
    BuildResult,
    Generator,
    build_library,
    get_generator,
    list_generators,
    register_generator,
)
from .importers import export_sa1b, import_amg, import_sa1b, read_sa1b
from .keys import image_key, parse_image_key
from .merge import merge_libraries
from .reader import ProposalLibrary
from .refs import UnsafePickleError, load_refs, read_refs_pickle
from .semires_io import export_semires, import_semires, load_instances, read_semires
from .verify import VerifyReport, verify_library
from .writer import LibraryWriter, create_library, shard_path

__all__ = [
    "FORMAT_VERSION",
    "BuildResult",
    "DuplicateImageError",
    "Generator",
    "LibraryCorruptError",
    "LibraryError",
    "LibraryFinishedError",
    "LibraryWriter",
    "ProposalLibrary",
    "UnsafePickleError",
    "VerifyReport",
    "build_library",
    "create_library",
    "export_coco",
    "export_sa1b",
    "export_semires",
    "get_generator",
    "image_key",
    "import_amg",
    "import_coco",
    "import_sa1b",
    "import_semires",
    "list_generators",
    "load_instances",
    "load_refs",
    "merge_libraries",
    "parse_image_key",
    "read_refs_pickle",
    "read_sa1b",
    "read_semires",
    "register_generator",
    "shard_path",
    "verify_library",
]
