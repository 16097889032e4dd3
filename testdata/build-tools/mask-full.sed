s#/tmp/k[0-9]+\.[A-Za-z0-9]+/#/tmp/<scratch>/#g
s/with [0-9.]+[KMG]?B free of [0-9.]+[KMG]?B/with <n> free of <size>/
s/^[0-9]+\+[0-9]+ records (in|out)$/<records>/
