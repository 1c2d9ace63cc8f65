"""Media libraries: changers (mtx, Bareos-style changer scripts, the virtual
library), tape drives (the Linux st driver, the virtual drive), and the media
format written on them (formats/media.py). Inventory, labelling, pools and
copying points to media are use cases in services/."""
