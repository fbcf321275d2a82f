"""Offline data: glyph images, episode samplers, procedural task families, opt-in Omniglot."""

from tutor.data.episodes import AnyShotSampler, Episode, EpisodeSampler, fixed_episodes, stack_episodes
from tutor.data.glyphs import GlyphBank, load_glyphs
from tutor.data.omniglot import download_omniglot, load_omniglot
from tutor.data.tasks import GaussianClassTasks, SinusoidTasks

__all__ = ["AnyShotSampler", "Episode", "EpisodeSampler", "fixed_episodes", "stack_episodes",
           "GlyphBank", "load_glyphs", "download_omniglot", "load_omniglot",
           "GaussianClassTasks", "SinusoidTasks"]
