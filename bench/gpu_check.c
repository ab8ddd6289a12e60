/* placeholder */
#include "ditattn/ditattn.h"
int main(void) { return 0; }
