"""Bundles: runs carried across an air gap in a directory (docs/AIRGAP.md).

format.py    the layout, manifest and COMMIT; verify() checks every hash
export.py    export_bundle(): a consistent snapshot of what changed, committed last
merge.py     merge(): a verified bundle into a store, idempotent and order-free
importer.py  import_bundles(): verify, merge into a (staging) store, upload via runstore.remote
stdout.py    each run's stdout.log carried as a blob, placed in the importing store
"""

from runstore.bundle.export import ExportResult, export_bundle, store_id
from runstore.bundle.format import (
    BundleCorruptError,
    BundleError,
    BundleIncompleteError,
    BundleVersionError,
    Manifest,
    is_bundle,
    verify,
)
from runstore.bundle.importer import (
    ImportReport,
    find_bundles,
    gaps,
    import_bundles,
    staging_store,
    upload_ready,
)

__all__ = [
    "BundleCorruptError", "BundleError", "BundleIncompleteError", "BundleVersionError",
    "ExportResult", "ImportReport", "Manifest", "export_bundle", "find_bundles", "gaps",
    "import_bundles", "is_bundle", "staging_store", "store_id", "upload_ready", "verify",
]
