"""Browser tests: JupyterLab and HTML outputs rendered by Debian's headless Chromium (driven by Playwright)."""
