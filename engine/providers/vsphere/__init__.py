"""The vSphere provider: sessions, inventory reads (one PropertyCollector pass), CBT queries."""
