"""ferry: declarative plan-and-apply migration of VMware vSphere VMs to OpenStack."""

__version__ = "0.1.0"
