"""zonegate control: the traffic-split platform (desired state, changes, history, stores)."""
