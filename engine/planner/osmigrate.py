"""Names os-migrate's vmware-migration-kit gives its volumes, so ferry can adopt them (pure).

Its SafeVmName: transliterate Latin diacritics, replace [^A-Za-z0-9_-] with '_', collapse
runs of '_' and of '-', cut to 64 characters, trim trailing '_'/'-'; a disk's volume is
`<SafeVmName>-<device key>`, with metadata osm=true, changeID, converted.
"""

from __future__ import annotations

import re
import unicodedata


def safe_vm_name(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", ascii_name)
    safe = re.sub(r"_+", "_", re.sub(r"-+", "-", safe))
    return safe[:64].rstrip("_-")


def volume_name(vm_name: str, disk_key: int) -> str:
    return f"{safe_vm_name(vm_name)}-{disk_key}"
