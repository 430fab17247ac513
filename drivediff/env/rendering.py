"""Rendering for the environments: ``rgb_array`` frames from ``drivediff.render``, ``human`` in a window.

``drivediff.render`` (pygame) is imported only when a frame is drawn, so environments start without it.
"""

from __future__ import annotations

import numpy as np

from drivediff.errors import DrivediffError

__all__ = ["EnvRenderer"]


class EnvRenderer:
    """Draws world ``b`` of a World, following one vehicle.

    Args:
        mode: None, ``"rgb_array"`` (``render`` returns an (H, W, 3) uint8 image) or ``"human"`` (draws
            into a pygame window at ``fps`` frames per second and returns None).
        size: (width, height) [px].
        fps: frames per second of the human window.
    """

    def __init__(self, mode: str | None, size: tuple[int, int], fps: float):
        self.mode = mode
        self.size = (int(size[0]), int(size[1]))
        self.fps = float(fps)
        self._screen = None
        self._clock = None

    def frame(self, world, b: int = 0, follow: int | None = None) -> np.ndarray:
        try:
            from drivediff.render import render_world
        except ImportError as e:
            raise DrivediffError(f"rendering needs drivediff.render (pygame-ce): {e}") from None
        return render_world(world, b, size=self.size, follow=follow)

    def render(self, world, b: int = 0, follow: int | None = None) -> np.ndarray | None:
        if self.mode is None:
            import gymnasium

            gymnasium.logger.warn("render() was called without a render_mode; pass render_mode='rgb_array' "
                                  "or 'human' when creating the environment")
            return None
        img = self.frame(world, b, follow)
        if self.mode == "rgb_array":
            return img
        self._show(img)
        return None

    def _show(self, img: np.ndarray) -> None:
        import pygame

        if self._screen is None:
            pygame.init()
            pygame.display.set_caption("drivediff")
            self._screen = pygame.display.set_mode(self.size)
            self._clock = pygame.time.Clock()
        pygame.event.pump()
        surf = pygame.surfarray.make_surface(np.ascontiguousarray(img.swapaxes(0, 1)))
        self._screen.blit(surf, (0, 0))
        pygame.display.flip()
        self._clock.tick(self.fps)

    def close(self) -> None:
        if self._screen is not None:
            import pygame

            pygame.display.quit()
            self._screen = None
