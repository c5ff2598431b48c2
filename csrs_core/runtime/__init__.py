"""What every job runs on: device and distributed set-up, atomic files, locks, progress logs, signals."""
