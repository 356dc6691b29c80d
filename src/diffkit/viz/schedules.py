"""Noise-schedule curves: how fast each schedule destroys the signal (sqrt(alpha_bar), 1 - alpha_bar, log-SNR)."""

from __future__ import annotations

from matplotlib.figure import Figure

from diffkit.schedule import Schedule
from diffkit.viz.figures import new_figure

# (title, y-axis label, function of a schedule) for the three panels, in order.
CURVES = (
    ("Signal kept", "sqrt(alpha_bar_t)  (mean coefficient)", lambda schedule: schedule.sqrt_alpha_bar),
    ("Noise added", "1 - alpha_bar_t  (variance)", lambda schedule: 1.0 - schedule.alpha_bar),
    ("Signal-to-noise ratio", "log SNR_t = log(alpha_bar / (1 - alpha_bar))", lambda schedule: schedule.log_snr),
)


def plot_schedules(schedules: dict[str, Schedule]) -> Figure:
    """One figure, three panels: sqrt(alpha_bar), 1 - alpha_bar and log-SNR against t, one line per schedule."""
    figure, axes = new_figure(1, len(CURVES), panel_inches=4.2)
    for panel, (title, label, curve) in zip(axes[0], CURVES):
        for name, schedule in schedules.items():
            # Plot against t / T so schedules of different lengths share one axis.
            fraction = schedule.timesteps.double() / max(int(schedule.timesteps[-1]), 1)
            panel.plot(fraction.numpy(), curve(schedule).double().numpy(), label=f"{name} (T={schedule.T})")
        panel.set_title(title)
        panel.set_xlabel("t / T")
        panel.set_ylabel(label)
        panel.grid(alpha=0.3)
        panel.legend(fontsize=8)
    figure.suptitle("Noise schedules: how fast the forward process destroys the image")
    figure.tight_layout()
    return figure
