"""The gradio page: four tabs (Generate, Edit, Interpolate, Explain) wired to `web.handlers`, and `serve()`.

Layout and wiring only. Every button runs through one queue whose concurrency limit keeps the CPU from being
oversubscribed; a `DiffkitError` becomes `gr.Error` (its one sentence in the page, no traceback) and a notice (a
prompt cut short) `gr.Warning`. A text model shows the prompt box (one meaning for all images, also the edits' and
the morph's first meaning) and prompt B in Interpolate, and hides the class dropdown and the morph's pictures.
"""

from __future__ import annotations

import functools
import inspect
import os
import tempfile

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry: nothing may reach the network

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from diffkit.errors import DiffkitError  # noqa: E402
from diffkit.sampling import SAMPLERS  # noqa: E402
from diffkit.web.handlers import Handlers  # noqa: E402
from diffkit.web.models import LIMITS, ModelChoice, ModelShelf  # noqa: E402
from diffkit.web.pictures import CANVAS, canvas_picture  # noqa: E402

# Decoding stops (DecompressionBombError) far below a memory problem; handlers refuse above LIMITS.upload_pixels.
Image.MAX_IMAGE_PIXELS = LIMITS.upload_pixels
CSS = "img { image-rendering: pixelated; }"  # model pictures are tiny: enlarge them without blurring


def in_page(function):
    """The handler with DiffkitError turned into gr.Error: the page shows its one sentence, never a traceback."""
    if inspect.isgeneratorfunction(function):
        @functools.wraps(function)
        def streamed(*args):
            try:
                yield from function(*args)
            except DiffkitError as error:
                raise gr.Error(str(error), print_exception=False) from None
        return streamed

    @functools.wraps(function)
    def returned(*args):
        try:
            return function(*args)
        except DiffkitError as error:
            raise gr.Error(str(error), print_exception=False) from None
    return returned


def model_controls(shelf: ModelShelf, name: str) -> tuple:
    """Updates when another model is chosen: the class dropdown (class models), the two prompt boxes (text models;
    emptied for the others, so no hidden prompt is sent), the interpolation's pictures (the others) and the three
    guidance sliders (the model's starting scale)."""
    choice = shelf.choice(name)
    text = choice.kind == "text"
    prompt = gr.update(visible=True) if text else gr.update(visible=False, value="")
    guidance = gr.update(value=choice.guidance)
    return (gr.update(choices=["all", *choice.classes], value="all", visible=choice.kind == "class"), prompt, prompt,
            gr.update(visible=not text), guidance, guidance, guidance)


def build_app(shelf: ModelShelf, out_dir: str | None = None) -> gr.Blocks:
    """The page over the shelf's models; pictures it writes go to out_dir (a fresh temporary folder by default)."""
    handlers = Handlers(shelf, out_dir or tempfile.mkdtemp(prefix="diffkit-serve-"), notify=gr.Warning)
    first = shelf.choice(shelf.names[0])
    with gr.Blocks(title="diffkit", analytics_enabled=False) as app:
        gr.Markdown("# diffkit\nGenerate, edit and explain with a trained diffusion model.")
        with gr.Row():
            model = gr.Dropdown(shelf.names, value=first.name, label="Model", elem_id="model")
            label = gr.Dropdown(["all", *first.classes], value="all", label="Class", visible=first.kind == "class",
                                elem_id="class")
            prompt = gr.Textbox(label="Prompt (text models: the English meaning to draw)", placeholder="e.g. water",
                                visible=first.kind == "text", elem_id="prompt")
        samples = gr.State(None)  # the last generated images, (N, C, H, W) in [-1, 1], for the other tabs
        with gr.Tab("Generate", elem_id="tab-generate"):
            generate_guidance = _generate_tab(handlers, first, model, label, prompt, samples)
        with gr.Tab("Edit", elem_id="tab-edit"):
            edit_guidance = _edit_tab(handlers, first, model, label, prompt, samples)
        with gr.Tab("Interpolate", elem_id="tab-interpolate"):
            morph_pictures, prompt_b, morph_guidance = _interpolate_tab(handlers, first, model, label, prompt)
        with gr.Tab("Explain", elem_id="tab-explain"):
            _explain_tab(handlers, first, model)
        toggled = [label, prompt, prompt_b, morph_pictures, generate_guidance, edit_guidance, morph_guidance]
        model.change(functools.partial(model_controls, shelf), model, toggled, queue=False)
    return app


def _numbers(steps: int, tab: str, count: bool = True) -> tuple:
    """Steps, seed (and number of images) inputs; bounds are checked by the handlers, which say the range."""
    steps_input = gr.Number(steps, label=f"Steps (1-{LIMITS.steps})", precision=0, elem_id=f"{tab}-steps")
    seed = gr.Number(0, label="Seed", precision=0, elem_id=f"{tab}-seed")
    if not count:
        return steps_input, seed
    return steps_input, seed, gr.Number(4, label=f"Images (1-{LIMITS.images})", precision=0, elem_id=f"{tab}-count")


def _guidance(first: ModelChoice, tab: str) -> gr.Slider:
    """The guidance slider of a tab, starting at the first model's scale (`model_controls` resets it)."""
    return gr.Slider(0, LIMITS.guidance, value=first.guidance, step=0.5, label="Guidance (1 = plain conditional)",
                     elem_id=f"{tab}-guidance")


def _generate_tab(handlers: Handlers, first: ModelChoice, model, label, prompt, samples) -> gr.Slider:
    with gr.Row():
        sampler = gr.Dropdown(list(SAMPLERS), value=first.config.sample.sampler, label="Sampler")
        guidance = _guidance(first, "generate")
        steps, seed, count = _numbers(first.config.sample.steps, "generate")
    button = gr.Button("Generate", variant="primary", elem_id="generate")
    with gr.Row():
        live = gr.Image(label="Live view: x_t (top) and predicted x0 (bottom)", elem_id="live", format="png")
        final = gr.Image(label="Samples", elem_id="final", format="png")
    download = gr.File(label="PNG", elem_id="download")
    button.click(in_page(handlers.generate), [model, label, prompt, sampler, steps, guidance, seed, count],
                 [live, final, download, samples])
    return guidance


def _from_samples(samples, index: float):
    """The generated image #index as an enlarged picture, or a one-sentence error."""
    if samples is None:
        raise gr.Error("Nothing generated yet; generate images in the Generate tab first.", print_exception=False)
    if index is None or not 0 <= int(index) < len(samples):
        raise gr.Error(f"Choose a generated image from 0 to {len(samples) - 1}.", print_exception=False)
    import torch

    return canvas_picture(torch.from_numpy(samples[int(index)]))


def _edit_tab(handlers: Handlers, first: ModelChoice, model, label, prompt, samples) -> gr.Slider:
    with gr.Row():
        index = gr.Number(0, label="Generated image #", precision=0)
        take = gr.Button("Use generated image", elem_id="use-generated")
    with gr.Row():
        steps, seed, count = _numbers(50, "edit")
        guidance = _guidance(first, "edit")
    with gr.Tab("Inpaint (paint white where to regenerate)"):
        editor = gr.ImageEditor(label="Picture and mask", type="numpy", image_mode="RGB", elem_id="editor",
                                canvas_size=(CANVAS, CANVAS), fixed_canvas=True, sources=("upload", "clipboard"),
                                brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", color_mode="fixed",
                                               default_size=24), layers=False, transforms=())
        inpaint_button = gr.Button("Inpaint", variant="primary", elem_id="inpaint")
        inpainted = gr.Image(label="Picture, mask (white), results", elem_id="inpainted", format="png")
    with gr.Tab("Image to image"):
        picture = gr.Image(label="Picture", type="numpy", sources=("upload", "clipboard"), elem_id="img2img-in")
        strength = gr.Slider(0.05, 1, value=0.5, step=0.05, label="Strength (1 redraws everything)")
        img2img_button = gr.Button("Redraw", variant="primary", elem_id="img2img")
        redrawn = gr.Image(label="Picture, then results", elem_id="redrawn", format="png")
    take.click(lambda s, i: (_from_samples(s, i), _from_samples(s, i)), [samples, index], [editor, picture])
    inpaint_button.click(in_page(handlers.inpaint), [model, label, prompt, editor, steps, seed, count, guidance],
                         inpainted)
    img2img_button.click(in_page(handlers.img2img),
                         [model, label, prompt, picture, strength, steps, seed, count, guidance], redrawn)
    return guidance


def _interpolate_tab(handlers: Handlers, first: ModelChoice, model, label, prompt) -> tuple:
    """The tab's layout; returns what `model_controls` toggles: the pictures' column, prompt B, the guidance."""
    text = first.kind == "text"
    with gr.Column(visible=not text) as pictures:
        gr.Markdown("Each image is an upload, or an image of the model's training set by index (`0`) or class name "
                    "(a glyph's character).")
        with gr.Row():
            with gr.Column():
                picture_a = gr.Image(label="Image A", type="numpy", sources=("upload", "clipboard"))
                item_a = gr.Textbox("0", label="or training image A (index or class name)", elem_id="item-a")
            with gr.Column():
                picture_b = gr.Image(label="Image B", type="numpy", sources=("upload", "clipboard"))
                item_b = gr.Textbox("1", label="or training image B (index or class name)", elem_id="item-b")
    prompt_b = gr.Textbox(label="Prompt B: one noise morphs from the prompt above into this meaning",
                          placeholder="e.g. fire", visible=text, elem_id="prompt-b")
    with gr.Row():
        frames = gr.Number(8, label=f"Frames (2-{LIMITS.frames})", precision=0)
        steps, seed = _numbers(20, "interpolate", count=False)
        guidance = _guidance(first, "interpolate")
    button = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
    strip = gr.Image(label="Morph strip", elem_id="strip", format="png")
    gif = gr.File(label="GIF", elem_id="gif")
    button.click(in_page(handlers.interpolate), [model, label, prompt, picture_a, item_a, picture_b, item_b, prompt_b,
                                                 frames, steps, seed, guidance], [strip, gif])
    return pictures, prompt_b, guidance


def _explain_tab(handlers: Handlers, first, model) -> None:
    gr.Markdown("The forward process q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) on one image.")
    with gr.Row():
        picture = gr.Image(label="Picture (or a training image below)", type="numpy", sources=("upload", "clipboard"))
        item = gr.Textbox("0", label="Training image (index or class name)", elem_id="explain-item")
    T = first.config.diffusion.T
    t = gr.Slider(0, T - 1, value=T // 2, step=1, label="t", elem_id="t")
    seed = gr.Number(0, label="Noise seed", precision=0)
    button = gr.Button("Show", variant="primary", elem_id="explain")
    with gr.Row():
        noised = gr.Image(label="x_t", elem_id="noised", format="png")
        caption = gr.Textbox(label="At this t", elem_id="caption")
    strip = gr.Image(label="Forward process under each schedule (same noise)", elem_id="forward", format="png")
    curves = gr.Image(label="Schedule curves", elem_id="curves", format="png")
    outputs = [noised, caption, strip, curves]
    button.click(in_page(handlers.explain), [model, picture, item, t, seed], outputs)
    t.release(in_page(handlers.explain), [model, picture, item, t, seed], outputs)


def serve(shelf: ModelShelf, host: str = "127.0.0.1", port: int = 7860, workers: int = 1,
          block: bool = True) -> gr.Blocks:
    """Build the page and serve it on host:port through one queue of `workers` concurrent jobs."""
    app = build_app(shelf)
    app.queue(default_concurrency_limit=workers, max_size=64)
    app.launch(server_name=host, server_port=port, max_file_size=LIMITS.upload_bytes, prevent_thread_lock=not block,
               ssr_mode=False, quiet=True, css=CSS, show_error=False)
    return app
