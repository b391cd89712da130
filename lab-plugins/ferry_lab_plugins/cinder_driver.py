"""A cinder volume driver for ferry's lab: every volume is a sparse file.

Attaching a volume ("initialize_connection") returns the file's path as the device, so what a
migration writes through that path lands in a real file that the next attach (or a server booted
from the volume) sees. Snapshots, clones and reverts are sparse (or reflink) file copies.

A volume type with the extra spec `ferry_lab:fill=pattern` makes new volumes that do not read
as zeros (like a LUKS-encrypted type or some array backends): the driver writes a 4 KiB
pattern block at the start of every MiB of a new volume (16 MiB written per 4 GiB).
"""

import contextlib
import os
import subprocess

from cinder import exception
from cinder.image import image_utils
from cinder.volume import configuration, driver, volume_types
from oslo_config import cfg
from oslo_log import log as logging

LOG = logging.getLogger(__name__)
GiB = 1024**3
MiB = 1024**2
FILL_SPEC = "ferry_lab:fill"
FILL_BLOCK = b"\xde\xad\xbe\xef" * 1024  # 4 KiB

file_opts = [
    cfg.StrOpt("ferry_volumes_dir", help="Directory holding one sparse file per volume."),
]
cfg.CONF.register_opts(file_opts, group=configuration.SHARED_CONF_GROUP)


def _copy(src, dst, size=None):
    subprocess.run(["cp", "--sparse=always", "--reflink=auto", src, dst], check=True)
    if size is not None:
        os.truncate(dst, size)


def _fill(volume):
    """The volume type's `ferry_lab:fill` extra spec (None when it has none)."""
    if not volume.volume_type_id:
        return None
    return volume_types.get_volume_type_extra_specs(volume.volume_type_id).get(FILL_SPEC)


class FileVolumeDriver(driver.VolumeDriver):
    VERSION = "1.0.0"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(file_opts)
        self.backend_name = self.configuration.safe_get("volume_backend_name") or "ferry-lab"
        self._stats = {}

    # -- paths ----------------------------------------------------------------------------------
    @property
    def _dir(self):
        return self.configuration.ferry_volumes_dir

    def local_path(self, volume):
        return os.path.join(self._dir, f"volume-{volume.id}")

    def _snapshot_path(self, snapshot):
        return os.path.join(self._dir, f"snapshot-{snapshot.id}")

    # -- setup ----------------------------------------------------------------------------------
    def do_setup(self, context):
        os.makedirs(self._dir, exist_ok=True)

    def check_for_setup_error(self):
        if not self._dir or not os.path.isdir(self._dir):
            raise exception.VolumeBackendAPIException(data="ferry_volumes_dir is not a directory")

    # -- volumes --------------------------------------------------------------------------------
    def create_volume(self, volume):
        with open(self.local_path(volume), "wb") as f:
            f.truncate(volume.size * GiB)
            if _fill(volume) == "pattern":
                for offset in range(0, volume.size * GiB, MiB):
                    f.seek(offset)
                    f.write(FILL_BLOCK)
        return {}

    def delete_volume(self, volume):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.local_path(volume))

    def extend_volume(self, volume, new_size):
        os.truncate(self.local_path(volume), new_size * GiB)

    def create_cloned_volume(self, volume, src_vref):
        _copy(self.local_path(src_vref), self.local_path(volume), volume.size * GiB)
        return {}

    # -- snapshots ------------------------------------------------------------------------------
    def create_snapshot(self, snapshot):
        _copy(self.local_path(snapshot.volume), self._snapshot_path(snapshot))
        return {}

    def delete_snapshot(self, snapshot):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._snapshot_path(snapshot))

    def create_volume_from_snapshot(self, volume, snapshot):
        _copy(self._snapshot_path(snapshot), self.local_path(volume), volume.size * GiB)
        return {}

    def revert_to_snapshot(self, context, volume, snapshot):
        _copy(self._snapshot_path(snapshot), self.local_path(volume), volume.size * GiB)

    def snapshot_revert_use_temp_snapshot(self):
        return False

    # -- images ---------------------------------------------------------------------------------
    def copy_image_to_volume(self, context, volume, image_service, image_id, disable_sparse=False):
        """As Cinder's drivers do (image_utils.fetch_to_raw): the image, which Cinder's create
        flow has already fetched into image_conversion_dir (TemporaryImages), is written into the
        volume as raw by qemu-img convert: a qcow2 image's volume holds the guest's bytes, not
        the qcow2 file, and the image crosses HTTP once (this driver used to download it again,
        writing its bytes as they came: a qcow2 stayed qcow2)."""
        path = self.local_path(volume)
        image_utils.fetch_to_raw(
            context,
            image_service,
            image_id,
            path,
            self.configuration.volume_dd_blocksize,
            size=volume.size,
            run_as_root=False,
            disable_sparse=disable_sparse,
        )
        os.truncate(path, volume.size * GiB)

    def copy_volume_to_image(self, context, volume, image_service, image_meta):
        with open(self.local_path(volume), "rb") as data:
            image_service.update(context, image_meta["id"], {}, data)

    def clone_image(self, context, volume, image_location, image_meta, image_service):
        return None, False

    # -- exports and attachments ----------------------------------------------------------------
    def create_export(self, context, volume, connector):
        return None

    def ensure_export(self, context, volume):
        return None

    def remove_export(self, context, volume):
        return None

    def initialize_connection(self, volume, connector):
        return {
            "driver_volume_type": "local",
            "data": {"device_path": self.local_path(volume), "volume_id": volume.id},
        }

    def terminate_connection(self, volume, connector, **kwargs):
        return None

    def validate_connector(self, connector):
        return True

    # -- stats ----------------------------------------------------------------------------------
    def get_volume_stats(self, refresh=False):
        if refresh or not self._stats:
            self._update_volume_stats()
        return self._stats

    def _update_volume_stats(self):
        st = os.statvfs(self._dir)
        total = st.f_blocks * st.f_frsize / GiB
        free = st.f_bavail * st.f_frsize / GiB
        self._stats = {
            "volume_backend_name": self.backend_name,
            "vendor_name": "ferry",
            "driver_version": self.VERSION,
            "storage_protocol": "local",
            "pools": [
                {
                    "pool_name": self.backend_name,
                    "total_capacity_gb": round(total, 2),
                    "free_capacity_gb": round(free, 2),
                    "provisioned_capacity_gb": 0,
                    "reserved_percentage": 0,
                    "thin_provisioning_support": True,
                    "thick_provisioning_support": False,
                    "max_over_subscription_ratio": 20.0,
                    "QoS_support": False,
                    "multiattach": False,
                }
            ],
        }
