#include <stdio.h>

int main(void) {
    printf("hello from a static binary built by kiln\n");
    return 0;
}
