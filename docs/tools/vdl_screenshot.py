"""Screenshot of VisualDL's scalar page for a run, with every tag group expanded (for the README).

    python docs/tools/vdl_screenshot.py <run dir> <out.png>

Needs Debian's chromium + chromium-driver and `pip install selenium` (not project dependencies).
Starts `visualdl --logdir <run dir>` on a free local port, opens /app/scalar in headless
Chromium, expands the collapsed groups, screenshots the page and stops the server.
"""
import socket
import subprocess
import sys
import time


def main(run_dir, out):
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["visualdl", "--logdir", run_dir, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1500,2700"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts)
    try:
        time.sleep(6)
        driver.get(f"http://127.0.0.1:{port}/app/scalar")
        time.sleep(6)
        # group headers show the group name and a tag count; click the collapsed ones open
        for header in driver.find_elements(By.XPATH, "//*[normalize-space(text())='train' or "
                                                     "normalize-space(text())='val' or normalize-space(text())='test']"):
            try:
                header.click()
                time.sleep(1.5)
            except Exception:  # noqa: BLE001 - not clickable (already open or hidden)
                pass
        time.sleep(4)
        driver.execute_script("window.scrollTo(0, 0)")  # clicking scrolled the opened groups into view
        time.sleep(1)
        driver.save_screenshot(out)
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main(*sys.argv[1:3])
