"""Docks opened from Plugins > PathReview share the window: they tabify instead of stacking (issue 26 item 6:
five stacked docks stretched the window to 1942 px)."""


def test_five_docks_from_the_menu_tabify_and_fit_a_small_screen(sample_viewer, open_dock, qtbot):
    from qtpy.QtWidgets import QDockWidget

    keys = ["detect", "segment", "enhance", "compare", "train"]
    widgets = []
    for key in keys:
        widgets.append(open_dock(sample_viewer, key))
        qtbot.wait(10)
    qtbot.wait(50)

    def dock(w):
        d = w.parentWidget()
        while not isinstance(d, QDockWidget):
            d = d.parentWidget()
        return d

    main = widgets[0].window()
    docks = [dock(w) for w in widgets]
    for d in docks:
        assert set(main.tabifiedDockWidgets(d)) == set(docks) - {d}, d.windowTitle()
    assert main.minimumSizeHint().height() < 800  # a 1280 x 800 screen
