"""``turnout bench`` and the GPU check: programs that start their own stacks
and print figures. Like the CLI, they may import every package."""
