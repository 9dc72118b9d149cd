"""``gr.Blocks`` whose event outputs belong to the user who ran the event.

Gradio copies every file an event returns into its cache folder (content-addressed:
``<cache>/<hash of the bytes>/<name>``) and hands the path to the browser, which fetches it
at ``/gradio_api/file=<path>``. Gradio serves that file, and accepts it as an event's input,
to whoever names it. :class:`ProdioBlocks` records each such file in the upload registry as
owned by the user whose request ran the event, before the result leaves
:meth:`ProdioBlocks.process_api` (the one method every event route and the queue run an
event through), so that :mod:`prodio.middleware.uploads` refuses it to everybody else as it
refuses another user's upload.

Not recorded, so served as before: files outside Gradio's cache folder (static files the
app allowed, remote URLs) and files the page's own configuration names (component values
and examples every user is shown). A file two users both get from their own events (a
cached example, the same bytes under the same name) is owned by both.
"""

from __future__ import annotations

import inspect
import logging
import os
import typing
from collections.abc import Iterable, Iterator
from typing import Any, Final

import gradio as gr

from prodio.ui.state import request_state_value
from prodio.uploads.base import (
    UploadRegistry,
    UploadRegistryUnavailable,
    canonical_path,
    file_key,
)

logger = logging.getLogger("prodio.uploads")

OUTPUTS_UNAVAILABLE_MESSAGE: Final = (
    "Your result cannot be delivered right now. Please try again in a moment."
)


class ProdioBlocks(gr.Blocks):  # type: ignore[misc]  # gradio is untyped here
    """A ``gr.Blocks`` that records the files of each event's outputs for its user.

    ``output_registry`` is set when the page is mounted (:mod:`prodio.ui.mount`); without
    one (a Blocks built for a test, or outside prodio's app) nothing is recorded.
    """

    output_registry: UploadRegistry | None = None
    _public_files: frozenset[str] | None = None

    def resolve_handler_annotations(self) -> None:
        """Evaluate each handler's annotations once, now, instead of on every event.

        Gradio looks up a handler's type hints on every event (to find its ``gr.Request``
        parameter). Under ``from __future__ import annotations`` they are strings, and
        ``typing.get_type_hints`` compiles each of them again every time: about half of
        Gradio's per-event argument handling (``bench/``). Handlers whose hints cannot be
        evaluated are left as they are; Gradio treats them as having none either way.
        """
        for block_fn in self.fns.values():
            handler = block_fn.fn
            function = getattr(handler, "__func__", handler)
            if not inspect.isfunction(function):
                continue
            try:
                hints = typing.get_type_hints(handler)
            except (NameError, TypeError):
                continue
            function.__annotations__ = hints

    async def process_api(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        output: dict[str, Any] = await super().process_api(*args, **kwargs)
        registry = self.output_registry
        if registry is not None:
            request = kwargs["request"] if "request" in kwargs else _positional(args, 3)
            await self._record_outputs(registry, output, request)
        return output

    async def _record_outputs(
        self, registry: UploadRegistry, output: dict[str, Any], request: Any
    ) -> None:
        """Record the cache files of ``output`` for the user(s) of ``request`` (a list of
        requests for a batch); raise ``gr.Error`` (the result is not delivered) if the
        registry does not answer: an unrecorded file would be anybody's."""
        owners = _owned_parts(output, request)
        if not owners:
            return
        try:
            for user, parts in owners:
                keys = self._cache_file_keys(parts)
                if keys:
                    await registry.record(user, keys)
        except UploadRegistryUnavailable:
            logger.warning("upload registry unavailable: an event's output files were withheld")
            raise gr.Error(OUTPUTS_UNAVAILABLE_MESSAGE, print_exception=False) from None

    def _cache_file_keys(self, parts: Iterable[object]) -> list[str]:
        """The registry keys of the files in Gradio's cache folder that ``parts`` name,
        less those the page's configuration shows everybody."""
        keys: list[str] = []
        paths = [path for part in parts for path in file_paths(part)]
        if not paths:
            return keys
        folder = os.path.realpath(self.GRADIO_CACHE) + os.sep
        public = self._public()
        for path in paths:
            canonical = canonical_path(path)
            if canonical is not None and canonical.startswith(folder):
                key = file_key(canonical)
                if key is not None and key not in public:
                    keys.append(key)
        return keys

    def _public(self) -> frozenset[str]:
        """The keys of the files the page's configuration names: the same for every user,
        who all load it. Computed once: the configuration is fixed once the page is built."""
        if self._public_files is None:
            config = getattr(self, "config", None) or self.get_config_file()
            self._public_files = frozenset(
                key for key in map(file_key, file_paths(config)) if key is not None
            )
        return self._public_files


def _positional(args: tuple[Any, ...], index: int) -> Any:
    return args[index] if len(args) > index else None


def _user(request: Any) -> str | None:
    user = request_state_value(request, "user")
    return user if isinstance(user, str) and user else None


def _owned_parts(output: dict[str, Any], request: Any) -> list[tuple[str, list[object]]]:
    """Who gets which part of ``output``: (user, parts) pairs. A batch (one request per
    sample) gives each user their own sample; anything that does not line up is given to
    every user of the batch. Parts with no signed-in user are nobody's, and not recorded."""
    data = output.get("data")
    parts: list[object] = [data, output.get("render_config")]
    if not isinstance(request, list):
        user = _user(request)
        return [(user, parts)] if user is not None else []
    users = [_user(each) for each in request]
    samples = _batch_samples(data, len(users))
    if samples is None:
        return [(user, parts) for user in dict.fromkeys(users) if user is not None]
    return [
        (user, [sample]) for user, sample in zip(users, samples, strict=True) if user is not None
    ]


def _batch_samples(data: object, count: int) -> list[list[object]] | None:
    """A batch's data (one sequence per output, one value per sample) as one list of values
    per sample; None if it is not shaped so."""
    if not isinstance(data, list | tuple):
        return None
    samples: list[list[object]] = [[] for _ in range(count)]
    for values in data:
        if not isinstance(values, list | tuple) or len(values) != count:
            return None
        for sample, value in zip(samples, values, strict=True):
            sample.append(value)
    return samples


_CONTAINERS: Final = (dict, list, tuple)


def file_paths(value: object) -> Iterator[str]:
    """The ``path`` of every object in ``value`` that has a string one (Gradio's FileData
    and anything shaped like it), at any depth."""
    # Not recursive (outputs may nest deeply: a chat history, a JSON value), and plain
    # loops: this walks every output of every event.
    stack = [value]
    push = stack.append
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            path = item.get("path")
            if isinstance(path, str):
                yield path
            for child in item.values():
                if isinstance(child, _CONTAINERS):
                    push(child)
        elif isinstance(item, list | tuple):
            for child in item:
                if isinstance(child, _CONTAINERS):
                    push(child)
