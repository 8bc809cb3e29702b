"""Interactive controls for the lessons.

Every plot in the course is a plain function that returns a matplotlib Figure, made with
matplotlib.figure.Figure rather than pyplot so nothing is shown twice and tests can call it
without a browser or a display. A widget only wraps it: sliders with continuous_update=False,
so a drag redraws once, not per pixel. ipywidgets is imported here, inside the function, never
by the core library.
"""
import os


def _show(fig):
    from IPython.display import display
    if fig is not None:
        display(fig)


def _defaults(controls):
    return {k: (v[3] if isinstance(v, tuple) else v[0]) for k, v in controls.items()}


def interactive_plot(plot_fn, **controls):
    """Show plot_fn with a slider per keyword: a (min, max, step, value) tuple, or a list of
    options. Returns the widget (or None where ipywidgets is not installed).

    INT4LAB_WIDGETS=0 shows the plot at its default values instead of live controls. The
    headless notebook tests set it: nbclient can hang at random on cells whose Output widget
    captures a display (nbclient issue 312). The browser tests (tests/browser) drive the real
    widgets in JupyterLab instead.
    """
    try:
        import ipywidgets as w
        from IPython.display import display
    except ImportError:
        print("ipywidgets is not installed: showing the default plot only.")
        _show(plot_fn(**_defaults(controls)))
        return None
    if os.environ.get("INT4LAB_WIDGETS", "1") == "0":
        print("(controls off: INT4LAB_WIDGETS=0; showing the default values "
              + ", ".join(f"{k}={v}" for k, v in _defaults(controls).items()) + ")")
        _show(plot_fn(**_defaults(controls)))
        return None
    made = {}
    for name, spec in controls.items():
        if isinstance(spec, tuple):
            lo, hi, step, value = spec
            cls = w.IntSlider if all(isinstance(v, int) for v in spec) else w.FloatSlider
            made[name] = cls(min=lo, max=hi, step=step, value=value, description=name,
                             continuous_update=False)
        else:
            made[name] = w.Dropdown(options=list(spec), value=spec[0], description=name)
    out = w.interactive_output(lambda **kw: _show(plot_fn(**kw)), made)
    box = w.VBox([w.HBox(list(made.values())), out])
    display(box)
    return box
