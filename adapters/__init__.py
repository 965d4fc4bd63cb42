"""The front doors that run the graph: the Python API (`Searcher`), agent tools and their safety
boundary, the MCP server, the web app. Imports go one way: adapters -> graphs -> pipeline."""
