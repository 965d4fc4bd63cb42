"""The command line's own helpers: query terms, terminal image previews, the HTML report (its templates are shared with the web page)."""
