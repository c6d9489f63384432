"""Jobs: the preset catalog and the job lifecycle from request to result."""
