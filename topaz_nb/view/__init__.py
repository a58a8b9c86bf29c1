"""The comparison widget: ``widget.CompareView`` (an anywidget) with its front
end in ``static/``, the panes of a view (``panes``), modes and limits defined
once (``modes``), and the still composite and ``save_html`` page
(``composite``).

May import: ``imaging`` and the shared vocabulary.  Never imports ``api`` or
``storage``: a view is handed images, not processes.
"""
