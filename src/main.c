/* hookgate entry point: CLI, config load, workers, signals. */
#include <stdio.h>

int main(void)
{
    puts("hookgate " HG_VERSION);
    return 0;
}
