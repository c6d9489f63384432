"""GPU runner: runs the diffusers pipeline of each dispatched job and reports its outcome."""
