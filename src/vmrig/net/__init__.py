"""Networks between machines: the plan (addresses, MACs, vlans), the vlan switches, fault injection."""
