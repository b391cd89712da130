"""An ML2 mechanism driver for a cloud without agents: every port binds on the first segment,
as a plain OVS-less "other" VIF. Nova's fake virt driver plugs nothing, so this is enough for
ports with fixed MACs and IPs to become ACTIVE-bound."""

from neutron_lib import constants
from neutron_lib.plugins.ml2 import api


class NoAgentMechanismDriver(api.MechanismDriver):
    def initialize(self):
        pass

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(
                segment[api.ID],
                "other",
                {"port_filter": False},
                status=constants.PORT_STATUS_ACTIVE,
            )
            return
