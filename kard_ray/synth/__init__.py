"""The synthetic knowledge world: fictional facts, a KB that states them, and questions about them."""

from kard_ray.synth.world import World, generate_world, load_world, write_world

__all__ = ["World", "generate_world", "load_world", "write_world"]
