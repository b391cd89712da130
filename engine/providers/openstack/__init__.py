"""The OpenStack provider (openstacksdk): volumes and their attachments so far."""
